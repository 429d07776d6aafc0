from lineguard.runtime.service import service_main
from lineguard.services.results.service import setup


def main() -> None:
    service_main("results", setup)


if __name__ == "__main__":
    main()
