from lineguard.runtime.service import service_main
from lineguard.services.inference.service import setup


def main() -> None:
    service_main("inference", setup)


if __name__ == "__main__":
    main()
