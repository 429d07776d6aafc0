"""The Prometheus metrics every service shares (served at /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "lineguard_messages_total", "Messages handled, by outcome (ok, retry, dead)", ["service", "kind", "outcome"]
)
HANDLE_SECONDS = Histogram(
    "lineguard_handle_seconds",
    "Time to handle one message",
    ["service", "kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DEAD_LETTERS = Counter("lineguard_dead_letters_total", "Messages sent to the dead-letter subject", ["service", "kind"])
PUBLISHED = Counter("lineguard_published_total", "Messages published", ["service", "subject_kind"])
READY = Gauge("lineguard_ready", "1 when the service is ready to serve", ["service"])
STALE_SKIPPED = Counter(
    "lineguard_stale_skipped_total",
    "Parts skipped because their verdict was already due (the service was behind)",
    ["service", "kind"],
)
DUPLICATE_PUBLISHES = Counter(
    "lineguard_publish_duplicates_total",
    "Publishes JetStream dropped as duplicates of a stored message id, by whether the stored payload is the same "
    "(a retry), different (an id collision) or unknown (it could not be read)",
    ["service", "kind", "payload"],
)
# Network cameras (capture's gige kind): the stream's own counts, so a cable or switch going bad shows before
# frames are lost.
CAMERA_PACKETS = Counter(
    "lineguard_camera_packets_total",
    "GigE Vision stream packets by what happened to them (received, missing, resent, resend_requests, error, "
    "duplicated)",
    ["station", "camera", "outcome"],
)
CAMERA_FRAMES = Counter(
    "lineguard_camera_frames_total",
    "Frames the camera's stream delivered or lost (completed, failures, underruns, timeouts, missing)",
    ["station", "camera", "outcome"],
)
CAMERA_CONNECTED = Gauge(
    "lineguard_camera_connected", "1 while the station's camera is connected", ["station", "camera"]
)
CAMERA_RECONNECTS = Counter(
    "lineguard_camera_reconnects_total",
    "Times the station's camera was opened again after it was lost",
    ["station", "camera"],
)
# Streaming cameras (capture's rtsp and usb kinds): a stream that stalls (no frame within stall_ms), ends or cannot
# be opened, by cause; each is then opened again with backoff.
CAMERA_STREAM_LOST = Counter(
    "lineguard_camera_stream_lost_total",
    "Times the station's camera stream was lost, by cause (stalled, ended, open_failed)",
    ["station", "camera", "cause"],
)
# Every production frame's image quality (capture, lineguard.imagequality; golden self-test parts not counted), by
# station: the distributions the drift watch compares with its baseline, for Grafana. The buckets span each figure's
# range as measured at 256 px (docs/drift.md).
IMAGE_BRIGHTNESS = Histogram(
    "lineguard_image_brightness",
    "Mean gray level of each frame (0..255), within the recipe's inspect_roi",
    ["station"],
    buckets=(16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 255),
)
IMAGE_CONTRAST = Histogram(
    "lineguard_image_contrast",
    "Standard deviation of each frame's gray levels, within the recipe's inspect_roi",
    ["station"],
    buckets=(4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 80, 96, 112, 128),
)
IMAGE_SHARPNESS = Histogram(
    "lineguard_image_sharpness",
    "Variance of the Laplacian of each frame at 256 px, within the recipe's inspect_roi",
    ["station"],
    buckets=(5, 10, 25, 50, 100, 250, 500, 1000, 1500, 2000, 3000, 5000, 10000, 25000),
)
IMAGE_SATURATED = Histogram(
    "lineguard_image_saturated_ratio",
    "Share of each frame's pixels at 250 or above (clipped), within the recipe's inspect_roi",
    ["station"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1),
)
