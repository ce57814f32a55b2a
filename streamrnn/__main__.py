from streamrnn.cli import main

raise SystemExit(main())
