"""bolus: cohort-scale perfusion imaging, from DICOM to study-level tables."""

__version__ = "0.1.0"
