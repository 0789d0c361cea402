from services.payments.server import main

main()
