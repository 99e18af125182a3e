import sys

if sys.argv[1:2] == ["keys"]:
    from engine.curve import main as keys_main

    sys.exit(keys_main(sys.argv[2:]))

from engine.server import main

sys.exit(main())
