"""The user service: profiles of the users auth registers, read through a cache, kept by
their owners and admins, and answered to other services over Kafka request-reply."""
