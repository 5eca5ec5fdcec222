from tenantfpm.cli import main

main()
