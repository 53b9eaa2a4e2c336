"""``python -m paranasal_ssl`` (``PythonSlicer -m paranasal_ssl`` inside Slicer)."""

from paranasal_ssl.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
