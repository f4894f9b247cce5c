"""``python -m hybridml.monitoring.prometheus``: print the PrometheusRule's spec as a plain rule file."""

import sys

from hybridml.monitoring.prometheus import main

sys.exit(main())
