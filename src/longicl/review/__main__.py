from longicl.review.cli import main

raise SystemExit(main())
