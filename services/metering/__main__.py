from services.metering.server import main

main()
