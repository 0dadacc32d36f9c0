"""Kafka's own formats and workloads, shared by the Kafka, RDMA-Kafka and KafkaDirect datapaths.

* :mod:`kdlab.kafka.records`: record batch format v2 ("magic 2"), real bytes with
  CRC-32C, exactly as Kafka 2.x writes them to the wire and to log segments;
* :mod:`kdlab.kafka.omb`: OpenMessaging Benchmark workload files and result JSON.

Everything here is engine-neutral: plain bytes and dataclasses, no engine imports.
"""
