"""Per-rule conda environments, checked offline (conda and its channels are not reachable here).

Every rule in rules/*.smk that runs code names an env file in envs/; every env file is well formed
and pinned, every spec parses as conda (py-rattler's MatchSpec) or pip (packaging) would parse it,
the pins agree with pyproject.toml, and every module the rule's code imports, followed from its
script function by function into the bolus library, is a package of its env. bolus itself is
installed into each env by the env's post-deploy script, from the checkout running the workflow.
Generic over whatever rules and envs exist, so new rule files are covered as they arrive.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from rattler import MatchSpec

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
ACTIONS = ("script", "shell", "run", "notebook", "wrapper")

# import name -> conda (or pip) package name, where the two differ
PACKAGE_OF_IMPORT = {
    "yaml": "pyyaml",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "torch": "pytorch",
    "ants": "antspyx",
    "PIL": "pillow",
}
# conda package name -> PyPI name, to compare pins with pyproject.toml
PYPI_OF_CONDA = {"pytorch": "torch"}


@dataclass
class Rule:
    name: str
    file: Path
    directives: dict[str, str] = field(default_factory=dict)


def parse_rules() -> list[Rule]:
    """Rules and checkpoints of rules/*.smk with the first value line of each directive
    (the layout snakefmt enforces: `directive:` then its value, indented, on the next line)."""
    rules = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        lines = smk.read_text().splitlines()
        current = None
        for i, line in enumerate(lines):
            m = re.match(r"^(?:rule|checkpoint) (\w+):", line)
            if m:
                current = Rule(m.group(1), smk)
                rules.append(current)
                continue
            if line and not line[0].isspace():
                current = None
            m = re.match(r"^    (\w+):\s*(.*)$", line)
            if current is not None and m:
                value = m.group(2) or (lines[i + 1].strip() if i + 1 < len(lines) else "")
                current.directives[m.group(1)] = value.rstrip(",")
    return rules


def literal(value: str) -> str:
    return ast.literal_eval(value)


def runs_code(rule: Rule) -> bool:
    return any(action in rule.directives for action in ACTIONS)


def env_path(rule: Rule) -> Path:
    return (rule.file.parent / literal(rule.directives["conda"])).resolve()


@cache
def load_env(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def conda_specs(env: dict) -> list[str]:
    return [d for d in env["dependencies"] if isinstance(d, str)]


def pip_specs(env: dict) -> list[str]:
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    return [spec for block in pips for spec in block]


def env_packages(env: dict) -> set[str]:
    names = {MatchSpec(spec).name.normalized for spec in conda_specs(env)}
    names |= {Requirement(spec).name.lower() for spec in pip_specs(env)}
    return names


# --- what a rule's code imports --------------------------------------------------------------


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_events(node: ast.AST, package: str):
    """(module, attribute or None, bound name) for one import statement."""
    if isinstance(node, ast.Import):
        for a in node.names:
            yield a.name, None, a.asname or a.name.split(".")[0]
    elif isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join([*base, module] if module else base)
        for a in node.names:
            yield module, a.name, a.asname or a.name


def executed_at_import(tree: ast.Module):
    """Nodes run when the module is imported: all but function bodies and `if TYPE_CHECKING:`."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            stack.extend(node.decorator_list if not isinstance(node, ast.Lambda) else [])
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


@dataclass
class Module:
    name: str
    package: str
    tree: ast.Module
    defs: dict[str, ast.AST]
    aliases: dict[str, tuple[str, str | None]]


@cache
def parse_module(name: str, path: Path | None = None) -> Module:
    path = path or module_file(name)
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    defs = {
        n.name: n
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    aliases = {}
    for node in executed_at_import(tree):
        for module, attr, bound in import_events(node, package):
            aliases[bound] = (module, attr)
    return Module(name, package, tree, defs, aliases)


class ImportClosure:
    """Third-party modules and executables that running some code needs: module-level imports of
    every bolus module it imports, and the imports inside every function it can reach
    (functions it names, in its own module or imported from another bolus module)."""

    def __init__(self):
        self.third_party: set[str] = set()
        self.executables: set[str] = set()
        self._modules: set[str] = set()
        self._defs: set[tuple[str, str]] = set()

    def add_script(self, path: Path):
        module = parse_module("__script__", path)
        self._scan(module, list(executed_at_import(module.tree)))

    def _import(self, module: str, attr: str | None):
        top = module.split(".")[0]
        if top == "bolus":
            self._load(module)
            if attr:
                if module_file(f"{module}.{attr}"):
                    self._load(f"{module}.{attr}")
                else:
                    self._follow(module, attr)
        elif top and top not in sys.stdlib_module_names and top != "__future__":
            self.third_party.add(top)

    def _load(self, name: str):
        if name in self._modules:
            return
        self._modules.add(name)
        parts = name.split(".")
        for i in range(1, len(parts)):
            self._load(".".join(parts[:i]))
        module = parse_module(name)
        self._scan(module, list(executed_at_import(module.tree)))

    def _follow(self, module_name: str, name: str):
        if (module_name, name) in self._defs:
            return
        self._defs.add((module_name, name))
        module = parse_module(module_name)
        if name in module.defs:
            self._scan(module, list(ast.walk(module.defs[name])))
        elif name in module.aliases:  # re-exported from another module
            self._import(*module.aliases[name])

    def _bolus_module(self, module: Module, local: dict, name: str) -> str | None:
        module_name, attr = local.get(name) or module.aliases.get(name) or ("", None)
        full = f"{module_name}.{attr}" if attr else module_name
        return full if full.startswith("bolus") and module_file(full) else None

    def _scan(self, module: Module, nodes: list[ast.AST]):
        local: dict[str, tuple[str, str | None]] = {}
        for node in nodes:
            for imported, attr, bound in import_events(node, module.package):
                self._import(imported, attr)
                local[bound] = (imported, attr)
        for node in nodes:
            if isinstance(node, ast.Name) and node.id in module.defs:
                self._follow(module.name, node.id)
            elif isinstance(node, ast.Name) and node.id in module.aliases:
                imported, attr = module.aliases[node.id]
                if attr and imported.startswith("bolus"):
                    self._follow(imported, attr)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                target = self._bolus_module(module, local, node.value.id)
                if target:
                    self._follow(target, node.attr)
            elif (
                isinstance(node, ast.Call)
                and ast.unparse(node.func) == "shutil.which"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                self.executables.add(node.args[0].value)


def needed_packages(script: Path) -> set[str]:
    closure = ImportClosure()
    closure.add_script(script)
    return {PACKAGE_OF_IMPORT.get(m, m).lower() for m in closure.third_party} | {
        e.lower() for e in closure.executables
    }


# --- the checks ----------------------------------------------------------------------------

RULES = parse_rules()
CODE_RULES = [r for r in RULES if runs_code(r)]
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


def test_the_rule_files_were_read():
    names = {r.name for r in RULES}
    assert {"inspect", "convert", "preprocess", "perfusion", "subject_metrics", "study"} <= names


@pytest.mark.parametrize("rule", CODE_RULES, ids=lambda r: r.name)
def test_every_rule_that_runs_code_names_an_existing_env(rule):
    assert "conda" in rule.directives, f"{rule.file.name}: rule {rule.name} has no conda:"
    path = env_path(rule)
    assert path.is_file() and path.parent == REPO / "envs", (rule.name, path)


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_file_is_well_formed_and_pinned(path):
    env = load_env(path)
    assert set(env) <= {"name", "channels", "dependencies"}, set(env)
    assert env["channels"] and all(isinstance(c, str) for c in env["channels"])
    assert "defaults" not in env["channels"], "conda-forge only (defaults has licence terms)"
    deps = env["dependencies"]
    assert all(isinstance(d, str) or (isinstance(d, dict) and set(d) == {"pip"}) for d in deps)
    specs = conda_specs(env)
    assert len({MatchSpec(s).name.normalized for s in specs}) == len(specs), "a package twice"
    names = {MatchSpec(s).name.normalized for s in specs}
    assert "python" in names
    if pip_specs(env):
        assert "pip" in names, "a pip: block needs pip itself in the env"
    for spec in specs:
        parsed = MatchSpec(spec)  # raises on a malformed spec
        if parsed.name.normalized == "pip":
            continue
        # pinned: an exact version (x.y.z, or x.y for python), not a range
        assert re.fullmatch(r"[\w.-]+=\d+(\.\d+)+(=\S+)?", spec), f"{path.name}: {spec} unpinned"
    for spec in pip_specs(env):
        req = Requirement(spec)  # raises on a malformed requirement
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", spec


def test_every_env_is_used_by_a_rule():
    used = {env_path(r) for r in CODE_RULES if "conda" in r.directives}
    # envs/models.yaml serves the GPU rules of rules/models.smk
    unused = {p.resolve() for p in ENV_FILES} - used - {REPO / "envs" / "models.yaml"}
    assert not unused, unused


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_pins_agree_with_pyproject(path):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [
        Requirement(r) for extra in project["optional-dependencies"].values() for r in extra
    ]
    ranges = {r.name.lower(): r.specifier for r in declared}
    pins = {}
    for spec in conda_specs(load_env(path)):
        name = MatchSpec(spec).name.normalized
        if "=" in spec:
            pins[PYPI_OF_CONDA.get(name, name)] = spec.split("=")[1]
    for spec in pip_specs(load_env(path)):
        req = Requirement(spec)
        pins[req.name.lower()] = next(iter(req.specifier)).version
    checked = 0
    for name, version in pins.items():
        if name in ranges:
            assert ranges[name].contains(Version(version), prereleases=True), (name, version)
            checked += 1
    assert checked, f"{path.name} pins none of bolus's dependencies"


#: imports only on an opt-in GPU path that the CPU rules never take: the SVD maps run on torch
#: only with ``device="cuda"`` (library option; the perfusion rule uses numpy)
GPU_ONLY = {"pytorch"}


@pytest.mark.parametrize(
    "rule", [r for r in CODE_RULES if "script" in r.directives], ids=lambda r: r.name
)
def test_every_import_of_a_rule_is_in_its_env(rule):
    script = (rule.file.parent / literal(rule.directives["script"])).resolve()
    needed = needed_packages(script)
    if env_path(rule).name != "models.yaml":
        needed -= GPU_ONLY
    have = env_packages(load_env(env_path(rule)))
    missing = needed - have
    assert not missing, f"rule {rule.name}: {env_path(rule).name} lacks {sorted(missing)}"


def test_no_env_lists_what_none_of_its_rules_imports():
    """An env holds what its rules import: nothing more (python, pip and the CUDA pin aside)."""
    needed: dict[Path, set[str]] = {}
    for rule in CODE_RULES:
        if "script" in rule.directives:
            script = (rule.file.parent / literal(rule.directives["script"])).resolve()
            needed.setdefault(env_path(rule), set()).update(needed_packages(script))
    for path, packages in needed.items():
        extra = env_packages(load_env(path)) - packages - {"python", "pip", "cuda-version"}
        assert not extra, f"{path.name} lists {sorted(extra)}, which none of its rules imports"


def test_the_import_analysis_follows_functions_not_whole_modules():
    """convert reaches dcm2niix and pydicom through bolus.stages, but not ANTs, which only the
    preprocess function of the same module imports; and the analysis sees through aliases."""
    convert = needed_packages(REPO / "scripts" / "convert.py")
    assert {"dcm2niix", "pydicom", "nibabel", "numpy"} <= convert
    assert "antspyx" not in convert and "nilearn" not in convert
    preprocess = needed_packages(REPO / "scripts" / "preprocess.py")
    assert {"antspyx", "nilearn", "scikit-image"} <= preprocess


@pytest.mark.parametrize("rule", CODE_RULES, ids=lambda r: r.name)
def test_bolus_is_installed_into_the_env_from_the_checkout(rule):
    """Snakemake copies an env file to .snakemake/conda/ before creating it, so a relative pip
    path in it would point there: bolus comes from the post-deploy script instead, from the
    checkout that rules/common.smk exports as BOLUS_SOURCE, without its dependencies (the env's
    pins above are what the rule gets)."""
    deploy = env_path(rule).with_suffix(".post-deploy.sh")
    assert deploy.is_file(), f"{deploy.name} is missing"
    text = deploy.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert re.search(r"pip install .*--no-deps.*\"\$\{BOLUS_SOURCE[:?}]", text), text
    assert re.search(r"BOLUS_SOURCE", (REPO / "rules" / "common.smk").read_text())
    assert not any(spec.startswith((".", "/")) for spec in pip_specs(load_env(env_path(rule))))
