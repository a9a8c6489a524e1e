"""The ObjectStore port (``ports.py``) and its adapters: a local directory (``local.py``, the embedded default)
and any S3-compatible store (``s3.py``, the scale profile). Uploaded files wait there for their ingestion job."""
