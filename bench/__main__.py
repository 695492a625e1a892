import sys

if sys.argv[1:2] == ["pages"]:  # the pages benchmark (bench/README.md); the rest is the /v1 benchmark
    from bench.pages import main as pages

    sys.exit(pages(sys.argv[2:]))

from bench.run import main

sys.exit(main())
