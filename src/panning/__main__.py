from panning.cli import main

main()
