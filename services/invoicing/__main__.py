from services.invoicing.server import main

main()
