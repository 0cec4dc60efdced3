"""Tidings realtime benchmark (issue 7): ``python -m bench [--quick]``; see bench/RESULTS.md."""
