"""enrich: describe media with cheap multimodal models; exact cost per item; Parquet + DuckDB.

The layers keep their own folders in the repository (flows/, tasks/, schemas/, warehouse/, config/) and are
installed as subpackages of this one (pyproject.toml maps them). `extend_path` lets a strict editable install
(`pip install -e . --config-settings editable_mode=strict`, a link tree that type checkers read) work even
when the checkout itself comes first on sys.path: the subpackages are then found in the link tree.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
