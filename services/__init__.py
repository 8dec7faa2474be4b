"""SkinTriage services: gateway, inference, ood, reports. They never import each other."""
