"""The golden set `enrich eval` scores by default: media, and labels.json with each file's labels, source and
licence. Shipped inside the package as `enrich.golden` (pyproject.toml maps this folder) so an installed
`enrich eval` finds it; samples/make_golden.py regenerates the media."""
