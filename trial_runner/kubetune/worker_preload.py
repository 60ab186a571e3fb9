"""The fork server's preload (see kubetune.pool): imported once, before the server forks workers.

Importing it imports the fitting code with the collector paused, then freezes every object
alive, so that the forked workers start with scikit-learn loaded, and no collection in them
writes to the pages they share with the server.
"""

from __future__ import annotations

from kubetune.pool import import_fitting_code

import_fitting_code()
