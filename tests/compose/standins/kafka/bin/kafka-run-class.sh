#!/bin/sh
# java -cp /opt/kafka/libs/* CLASS ARGS, as the Kafka distribution's script (the parts compose uses).
exec java ${KAFKA_HEAP_OPTS:--Xmx256m} ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1} \
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties ${KAFKA_OPTS:-} -cp '/opt/kafka/libs/*' "$@"
