from medcycle.cli.main import main

main()
