from waka.cli import main

raise SystemExit(main())
