"""``python -m hybridml.daemon --home HOME``: the daemon itself (started, detached, by the first command)."""

import sys

from hybridml.daemon.service import main

sys.exit(main())
