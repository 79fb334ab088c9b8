"""Training: train.py's flags (config), the static programs (program), one epoch and one evaluation pass (loop),
which checkpoint a run continues from (resume), multi-card set-up (distributed) and progress lines (log)."""
