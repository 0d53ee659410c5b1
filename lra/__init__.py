"""Long Range Arena harness: data, model, Lightning module, results store."""


class LRAError(Exception):
    """An error the user can fix (bad input, missing data, bad option): printed as one line, no traceback."""
