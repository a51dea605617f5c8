from surrogate.cli import main

raise SystemExit(main())
