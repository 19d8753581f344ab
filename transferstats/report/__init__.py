"""Report rendering: figures, LaTeX tables, Markdown and self-contained HTML."""
