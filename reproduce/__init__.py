"""probe's reproductions of published figures: a registry of records (source, setting table, one
sweep spec per scale, analysis, figure) and one runner (docs/design.md, "Reproductions"). The top
layer below the command line: it uses the trainer and the analyses; nothing below imports it."""
