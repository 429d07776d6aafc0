from lineguard.runtime.service import service_main
from lineguard.services.ocr.service import setup


def main() -> None:
    service_main("ocr", setup)


if __name__ == "__main__":
    main()
