from lineguard.runtime.service import service_main
from lineguard.services.decision.service import setup


def main() -> None:
    service_main("decision", setup)


if __name__ == "__main__":
    main()
