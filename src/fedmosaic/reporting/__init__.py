"""Human-readable outputs: report.md, plots, side-by-side comparisons."""
