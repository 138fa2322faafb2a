"""Build hooks for the Triton Linux platform image.

mkosi's scripts at the top of the repository are a few lines that call into
these modules. Each module has one job; functions that compute something are
pure and tested without root (tests/unit).
"""
