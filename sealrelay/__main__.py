from __future__ import annotations

from sealrelay.cli import main


raise SystemExit(main())
