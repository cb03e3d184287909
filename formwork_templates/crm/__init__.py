"""The CRM: customers, contacts, opportunities, orders, service tickets and the automations around them."""
