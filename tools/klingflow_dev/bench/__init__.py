"""`make bench`: each hot path measured against its floor, side by side (see core.py)."""
