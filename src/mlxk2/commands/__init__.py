"""Per-command glue between argparse, the operations and the renderers."""
