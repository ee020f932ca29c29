"""Analysis of fedsim result folders: plots, comparison tables and a Markdown report.

Reads result tables only; never runs simulations.
"""
