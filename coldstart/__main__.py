from coldstart.cli import main

raise SystemExit(main())
