"""The names of a study folder's files, shared by the runner (snnlab.study) and the report
(snnlab.report.study) so that neither imports the other."""

STUDY_FILE = "snnlab_study.yaml"   # the resolved study, versions, command, stage wall times
GRADIENTS_DIR = "gradients"        # the gradient analysis (gradients_summary.csv, protocol.yaml)
REPORT_DIR = "report"              # report.html, report.md, CSVs and figures


def sweep_dir_name(study: str, section: str) -> str:
    """The folder of a study's sweep section (``<study>_supervised``, ``<study>_rl``)."""
    return f"{study}_{section}"
