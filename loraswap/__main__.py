from __future__ import annotations

from loraswap.cli import main

if __name__ == "__main__":
    main()
