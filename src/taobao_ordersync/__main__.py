"""``python -m taobao_ordersync``: the command-line interface."""

from taobao_ordersync.cli import main

raise SystemExit(main())
