// Package celery holds the interop tests of package celery against a real
// Celery worker and client (from the repository's .venv), every direction
// on RabbitMQ and on Redis (adapters/kombu).
package celery
