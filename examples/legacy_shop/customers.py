"""Customers: stays in the monolith for now."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from examples.legacy_shop.db import SessionDep
from examples.legacy_shop.models import Customer
from examples.legacy_shop.schemas import CustomerIn, CustomerOut

router = APIRouter(prefix="/customers", tags=["customers"])


@router.get("", response_model=list[CustomerOut])
def list_customers(db: SessionDep) -> list[Customer]:
    return list(db.scalars(select(Customer).order_by(Customer.id)))


@router.get("/{customer_id}", response_model=CustomerOut)
def get_customer(customer_id: int, db: SessionDep) -> Customer:
    customer = db.get(Customer, customer_id)
    if customer is None:
        raise HTTPException(404, "no such customer")
    return customer


@router.post("", response_model=CustomerOut, status_code=201)
def create_customer(body: CustomerIn, db: SessionDep) -> Customer:
    customer = Customer(**body.model_dump())
    db.add(customer)
    try:
        db.commit()
    except IntegrityError as e:
        raise HTTPException(409, "email taken") from e
    return customer
