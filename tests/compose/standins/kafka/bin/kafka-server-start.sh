#!/bin/sh
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx1g -Xms256m} KAFKA_JVM_PERFORMANCE_OPTS=${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC} \
  exec "$(dirname "$0")/kafka-run-class.sh" kafka.Kafka "$@"
