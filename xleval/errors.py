"""xleval's exception types (defined in :mod:`xleval.api.errors`), under the name plugins
import them by."""

from xleval.api.errors import *  # noqa: F403
from xleval.api.errors import __all__  # noqa: F401
