"""The report's reStructuredText (workflow description, figure and table captions) renders
without docutils errors for every configuration branch, with the Jinja settings Snakemake's
report uses (``trim_blocks``, ``lstrip_blocks``: a line holding only a block tag vanishes,
so a blank line after ``{% endif %}`` must stand on its own). A broken caption still
produces a report, but ``make demo`` printed "(ERROR/3) Unexpected indentation" and the
workflow description's bullet list was run into its paragraph."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = sorted((REPO / "report").glob("*.rst"))


class _Snakemake:
    def __init__(self, config):
        self.config = config
        self.wildcards = type("Wildcards", (), {"subject": "sub-01"})


# the call Snakemake's report makes (writer_name; docutils 0.22 announces its removal in 2.0)
@pytest.mark.filterwarnings('ignore:Argument "writer_name":PendingDeprecationWarning')
@pytest.mark.parametrize("models,subjects", [(True, "test"), (True, "all"), (False, "test")])
@pytest.mark.parametrize("caption", CAPTIONS, ids=[path.name for path in CAPTIONS])
def test_caption_renders_without_rst_errors(caption, models, subjects):
    import docutils.core
    import jinja2

    from bolus.config import with_defaults

    config = copy.deepcopy(with_defaults(yaml.safe_load((REPO / "config.yaml").read_text())))
    config["models"] = config["models"] if models else []
    config["study"]["subjects"] = subjects
    assert not models or config["models"], "config.yaml should train models"
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(caption.read_text()).render(snakemake=_Snakemake(config))
    problems = io.StringIO()
    docutils.core.publish_parts(
        text, writer_name="html", settings_overrides={"warning_stream": problems}
    )
    assert problems.getvalue() == "", (caption.name, problems.getvalue(), text)
