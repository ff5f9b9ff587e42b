from gsimclr.cli import main

raise SystemExit(main())
