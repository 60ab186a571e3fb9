"""The fork server's preload (see kubetune.pool): imported once, before the server forks workers.

Importing it imports the fitting code and the job's estimator and step modules (named by
kubetune.pool in the server's environment, and only those of the allow-lists) with the
collector paused, then freezes every object alive, so that the forked workers start with
scikit-learn and the job's models loaded, and no collection in them writes to the pages they
share with the server.
"""

from __future__ import annotations

import os

from kubetune.allowlist import MODULES
from kubetune.pool import MODULES_ENV, import_fitting_code

# Read, then dropped from the environment the workers inherit.
_named = os.environ.pop(MODULES_ENV, "").split(",")
import_fitting_code([module for module in _named if module in MODULES])
