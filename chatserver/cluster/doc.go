// Package cluster holds the multi-node integration tests: two or three chat
// servers in one test process, routed through the machine's RabbitMQ (amqp
// broker) with history in its PostgreSQL (postgres store), each behind TCP
// proxies the tests cut to simulate failures, and centrifuge-go clients.
// The package has no code of its own.
package cluster
