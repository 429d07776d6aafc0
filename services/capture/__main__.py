from lineguard.runtime.service import service_main
from lineguard.services.capture.service import setup


def main() -> None:
    service_main("capture", setup)


if __name__ == "__main__":
    main()
