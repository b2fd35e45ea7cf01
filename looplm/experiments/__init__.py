"""Research runners built on the library (grids of runs with fixed seeds, and the reports they write):
research code, outside the core. `looplm study NAME` runs one."""
