import sys

from .bench import build_parser, main

sys.exit(main(build_parser().parse_args()))
