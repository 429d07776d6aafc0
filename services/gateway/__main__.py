from lineguard.runtime.service import service_main
from lineguard.services.gateway.service import setup


def main() -> None:
    service_main("gateway", setup)


if __name__ == "__main__":
    main()
